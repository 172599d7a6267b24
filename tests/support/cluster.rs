//! A real cluster for end-to-end tests: the `berth server` binary (see `api`) plus
//! `berth agent` processes on real Docker, an admin kube-rs client, and helpers that wait
//! for pods and events. Agents are killed on drop; their containers carry the test's label,
//! so the test's `TestScope` removes them even when the test fails.

use std::process::Command;
use std::time::Duration;

use berth::client::ClientOptions;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};

use super::api::Server;
use super::docker::{TEST_LABEL, TestScope};
use super::process::Process;
use super::{accept, eventually};

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
    process: Process,
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
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command
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
            .env("RUST_LOG", "warn");
        let mut process = Process::spawn(&format!("berth agent {node}"), &mut command);
        let mut metrics_url = String::new();
        process.wait_line("node registration", Duration::from_secs(60), |line| {
            if let Some(url) = line.strip_prefix("metrics on ") {
                metrics_url = url.to_string();
            }
            line.ends_with(" registered").then_some(())
        });
        Agent {
            process,
            node: node.to_string(),
            metrics_url,
        }
    }

    /// SIGTERM, then wait up to 20 s (as an operator restarting the agent would).
    pub fn stop(&mut self) {
        let _ = self.process.stop("TERM", Duration::from_secs(20));
    }

    /// The agent's `/metrics` text.
    pub async fn metrics(&self) -> String {
        agent_metrics(&self.metrics_url).await
    }
}

/// The `/metrics` text of the agent at `url` (`berth agent` and `berth up` print it as
/// `metrics on URL`).
pub async fn agent_metrics(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("metrics reachable")
        .text()
        .await
        .expect("metrics text")
}

/// The value of counter `name` (labels included, `x{kind="stopped"}`) in a `/metrics` text;
/// fails when it is absent.
pub fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("counter {name} missing: {metrics}"))
}

/// Waits for evidence that the agent at `url` has looked at everything since it started:
/// the workers of `pods` pods finished their first pass (a new pod set up or a running one
/// adopted), and two whole relists (every container compared with its pod) finished after
/// that. Only then does "nothing was restarted" say something. Returns the metrics text.
pub async fn wait_agent_looked(url: &str, pods: u64) -> String {
    let taken_on = eventually(
        &format!("the agent's workers to take on {pods} pods"),
        Duration::from_secs(60),
        || async {
            let text = agent_metrics(url).await;
            accept(text, |t| {
                counter(t, "berth_agent_pods_taken_on_total") >= pods
            })
        },
    )
    .await;
    let relists = counter(&taken_on, "berth_agent_relists_total");
    eventually(
        "two more relists of the agent",
        Duration::from_secs(60),
        || async {
            let text = agent_metrics(url).await;
            accept(text, |t| {
                counter(t, "berth_agent_relists_total") >= relists + 2
            })
        },
    )
    .await
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
    eventually(&format!("pod {name}: {what}"), timeout, || {
        let api = api.clone();
        let check = &check;
        async move {
            match api.get_opt(name).await {
                Ok(Some(pod)) if check(&pod) => Ok(pod),
                Ok(pod) => {
                    Err(serde_json::to_string_pretty(&pod.map(|p| p.status)).unwrap_or_default())
                }
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
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

/// How many times an event with `reason` was recorded about pod `name`: the sum of the
/// `count`s of its Events of that reason (a repeat bumps one Event's count).
pub async fn event_count(client: &kube::Client, name: &str, reason: &str) -> i32 {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.count.unwrap_or(1))
        .sum()
}

/// Waits until an event with `reason` (and a message containing `text`) is recorded.
pub async fn wait_event(client: &kube::Client, pod: &str, reason: &str, text: &str) -> String {
    let what = format!("a {reason} event mentioning {text:?} for pod {pod}");
    eventually(&what, Duration::from_secs(30), || async {
        let events = pod_events(client, pod).await;
        events
            .iter()
            .find(|(r, m)| r == reason && m.contains(text))
            .map(|(_, m)| m.clone())
            .ok_or(events)
    })
    .await
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

/// Runs `read` until its output contains `want` (which must not be empty); the output.
pub async fn eventually_output(read: impl Fn() -> String, want: &str) -> String {
    assert!(!want.is_empty(), "every output contains the empty string");
    eventually(
        &format!("output containing {want:?}"),
        Duration::from_secs(30),
        || async {
            let out = read();
            if out.contains(want) {
                Ok(out)
            } else {
                Err(out)
            }
        },
    )
    .await
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
