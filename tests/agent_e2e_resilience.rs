//! End to end, resilience: drift repaired (stopped, removed, replaced, orphaned
//! containers, a sandbox's lost network interface), an agent restart that adopts running containers, and Docker going away and
//! coming back. The real `berth server` and `berth agent` binaries on the real engine.

pub mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde_json::json;
use support::api::Server;
use support::cluster::*;
use support::docker::{TEST_IMAGE, TestScope, runtime};
use support::eventually;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn drift_outside_berth_is_repaired_with_events_and_metrics() {
    runtime().await;
    let scope = TestScope::new("e2e-drift");
    let server = Server::start();
    let agent = Agent::start(&server, "node-drift", &scope, &[]);
    let client = admin(&server).await;
    let pod = create_pod(
        &client,
        &agent.node,
        json!({
            "metadata": {"name": "steady"},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["sleep", "3600"]}]}
        }),
    )
    .await;
    let uid = pod.metadata.uid.clone().unwrap();
    let running = wait_pod(&client, "steady", MINUTE, "Running", all_ready).await;
    let first = container_id(&running, "app");

    // Stopped behind berth's back: restarted at once (no crash back-off), with events.
    docker(&["stop", "-t", "1", &first]);
    let message = wait_event(&client, "steady", "DriftDetected", "stopped outside berth").await;
    assert!(message.contains("app"), "{message}");
    wait_event(
        &client,
        "steady",
        "DriftRepaired",
        "restarted container app",
    )
    .await;
    let p = wait_pod(&client, "steady", MINUTE, "a new running container", |p| {
        all_ready(p) && container_id(p, "app") != first
    })
    .await;
    let second = container_id(&p, "app");

    // Removed behind berth's back: recreated.
    docker(&["rm", "-f", &second]);
    wait_event(&client, "steady", "DriftDetected", "removed outside berth").await;
    wait_event(
        &client,
        "steady",
        "DriftRepaired",
        "recreated container app",
    )
    .await;
    wait_pod(&client, "steady", MINUTE, "a recreated container", |p| {
        all_ready(p) && container_id(p, "app") != second
    })
    .await;

    // Replaced behind berth's back by a container configured otherwise: recreated from the spec.
    let p = wait_pod(&client, "steady", MINUTE, "Running", all_ready).await;
    let third = container_id(&p, "app");
    let sandbox = running_sandbox(&uid);
    let impostor = docker_run_for_the_agent(&[
        "-d",
        "--network",
        &format!("container:{sandbox}"),
        "--label",
        &format!("berth.dev/test={}", scope.id),
        "--label",
        "berth.dev/managed=true",
        "--label",
        &format!("berth.dev/pod-uid={uid}"),
        "--label",
        "berth.dev/pod-namespace=default",
        "--label",
        "berth.dev/pod-name=steady",
        "--label",
        "berth.dev/container=app",
        "--label",
        "berth.dev/role=app",
        "--label",
        "berth.dev/attempt=50",
        "--label",
        "berth.dev/spec-hash=0000000000000000",
        "--label",
        "berth.dev/node=node-drift",
        TEST_IMAGE,
        "sleep",
        "7",
    ]);
    let message = wait_event(
        &client,
        "steady",
        "DriftDetected",
        "no longer matches its spec",
    )
    .await;
    assert!(message.contains("0000000000000000"), "{message}");
    wait_event(
        &client,
        "steady",
        "DriftRepaired",
        "recreated container app from its spec",
    )
    .await;
    let p = wait_pod(
        &client,
        "steady",
        MINUTE,
        "the spec's container back",
        |p| {
            all_ready(p)
                && ![third.as_str(), impostor.as_str()].contains(&container_id(p, "app").as_str())
        },
    )
    .await;
    let id = container_id(&p, "app");
    let hash = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"berth.dev/spec-hash\"}}",
        &id,
    ]);
    assert_ne!(hash, "0000000000000000");

    // A berth container of a pod that does not exist on this node: removed.
    let ghost = docker_run_for_the_agent(&[
        "-d",
        "--label",
        &format!("berth.dev/test={}", scope.id),
        "--label",
        "berth.dev/managed=true",
        "--label",
        "berth.dev/pod-uid=ghost-uid",
        "--label",
        "berth.dev/pod-namespace=default",
        "--label",
        "berth.dev/pod-name=ghost",
        "--label",
        "berth.dev/container=app",
        "--label",
        "berth.dev/role=app",
        "--label",
        "berth.dev/node=node-drift",
        TEST_IMAGE,
        "sleep",
        "3600",
    ]);
    wait_event(
        &client,
        "ghost",
        "DriftDetected",
        "no longer exists on this node",
    )
    .await;
    wait_event(&client, "ghost", "DriftRepaired", "removed").await;
    eventually(
        "the orphan container removed",
        Duration::from_secs(30),
        || async {
            let left = docker(&["ps", "-aq", "--filter", "label=berth.dev/pod-uid=ghost-uid"]);
            if left.contains(&ghost[..12]) {
                Err(left)
            } else {
                Ok(())
            }
        },
    )
    .await;

    // The pod's network, plugged in by the agent: eth0 holds the pod's address, /etc/hosts
    // names the pod, the node's bridge answers and is the pod's name server.
    let before = wait_pod(&client, "steady", MINUTE, "Running", all_ready).await;
    let ip = before
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("status.podIP");
    let app = container_id(&before, "app");
    let addr = docker(&["exec", &app, "ip", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("inet {ip}/")), "{addr}");
    let hosts = docker(&["exec", &app, "cat", "/etc/hosts"]);
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with(&ip) && l.trim_end().ends_with("steady")),
        "{hosts}"
    );
    let route = docker(&["exec", &app, "ip", "route", "show", "default"]);
    let gateway = route.split_whitespace().nth(2).expect("a default route");
    docker(&["exec", &app, "ping", "-c", "1", "-W", "5", gateway]);
    let resolv = docker(&["exec", &app, "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains(&format!("nameserver {gateway}\n"))
            && resolv.contains("search default.svc.cluster.local ")
            && resolv.contains("options ndots:5"),
        "the cluster DNS on the bridge comes first: {resolv}"
    );

    // The node's end of the sandbox's veth deleted behind berth's back: the sandbox and its
    // containers are made again, and the pod keeps its address.
    let sandbox = running_sandbox(&uid);
    let veth = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"berth.dev/veth\"}}",
        &sandbox,
    ]);
    assert!(
        veth.starts_with("bp"),
        "the sandbox was plugged in by the agent: {veth:?}"
    );
    let deleted = std::process::Command::new("ip")
        .args(["link", "del", &veth])
        .output()
        .expect("ip");
    assert!(deleted.status.success(), "{deleted:?}");
    let message = wait_event(
        &client,
        "steady",
        "DriftDetected",
        "lost its network interface",
    )
    .await;
    assert!(message.contains(&veth), "{message}");
    wait_event(
        &client,
        "steady",
        "DriftRepaired",
        "recreated the pod sandbox",
    )
    .await;
    let after = wait_pod(&client, "steady", MINUTE, "a new sandbox", |p| {
        all_ready(p) && container_id(p, "app") != app
    })
    .await;
    assert_eq!(
        after.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some(ip.as_str()),
        "the pod keeps its address"
    );
    let app = container_id(&after, "app");
    docker(&["exec", &app, "ping", "-c", "1", "-W", "5", gateway]);

    let metrics = agent.metrics().await;
    for kind in ["stopped", "removed", "changed", "orphan"] {
        let line = format!("berth_agent_drift_repaired_total{{kind=\"{kind}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line} missing: {metrics}"));
        assert!(count >= 1, "{kind}: {metrics}");
    }
    assert!(pod_container_ids(&uid, Some("app")).len() <= 2);
}

#[tokio::test]
async fn a_restarted_agent_adopts_running_containers() {
    runtime().await;
    let scope = TestScope::new("e2e-adopt");
    let server = Server::start();
    let mut agent = Agent::start(&server, "node-adopt", &scope, &[]);
    let client = admin(&server).await;
    let pod = create_pod(
        &client,
        &agent.node,
        json!({
            "metadata": {"name": "kept"},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["sleep", "3600"]}]}
        }),
    )
    .await;
    let uid = pod.metadata.uid.unwrap();
    wait_pod(&client, "kept", MINUTE, "Running", all_ready).await;
    let started = |ids: &[String]| -> Vec<String> {
        ids.iter()
            .map(|id| {
                docker(&[
                    "inspect",
                    "-f",
                    "{{.Id}} {{.State.StartedAt}} {{.State.Status}}",
                    id,
                ])
            })
            .collect()
    };
    let mut before = started(&pod_container_ids(&uid, None));
    before.sort();
    assert_eq!(before.len(), 2, "sandbox and app: {before:?}");

    agent.stop();
    let mut agent = Agent::start(&server, "node-adopt", &scope, &[]);
    // The new agent's worker has taken the pod on and two relists have compared its
    // containers since (its /metrics says so): nothing was recreated or restarted.
    let looked = wait_agent_looked(&agent.metrics_url, 1).await;
    assert_eq!(
        counter(
            &looked,
            "berth_agent_drift_detected_total{kind=\"stopped\"}"
        ),
        0,
        "{looked}"
    );
    let mut after = started(&pod_container_ids(&uid, None));
    after.sort();
    assert_eq!(
        before, after,
        "the restarted agent kept the same containers and start times"
    );
    let p = wait_pod(&client, "kept", MINUTE, "Running", all_ready).await;
    let cs = &p.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(cs.restart_count, 0);
    let events = pod_events(&client, "kept").await;
    assert!(
        !events
            .iter()
            .any(|(r, _)| r == "DriftDetected" || r == "Killing"),
        "{events:?}"
    );
    agent.stop();
}

/// A unix socket that forwards to the real Docker socket and can be cut and restored, so
/// the agent sees Docker go away and come back without restarting the real daemon.
struct DockerProxy {
    path: std::path::PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DockerProxy {
    fn start(path: std::path::PathBuf) -> DockerProxy {
        let mut proxy = DockerProxy { path, task: None };
        proxy.restore();
        proxy
    }

    fn restore(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = tokio::net::UnixListener::bind(&self.path).expect("bind proxy socket");
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Drops the listener and every open connection.
    fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn node_ready(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_going_away_turns_the_node_not_ready_and_pods_come_back() {
    runtime().await;
    let scope = TestScope::new("e2e-outage");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let mut proxy = DockerProxy::start(socket.clone());
    let server = Server::start();
    let docker_host = format!("unix://{}", socket.display());
    let agent = Agent::start_with_env(
        &server,
        "node-outage",
        &scope,
        &["--docker-unhealthy-after", "2"],
        &[("DOCKER_HOST", &docker_host)],
    );
    let client = admin(&server).await;
    create_pod(
        &client,
        &agent.node,
        json!({
            "metadata": {"name": "survivor"},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["sleep", "3600"]}]}
        }),
    )
    .await;
    let p = wait_pod(&client, "survivor", MINUTE, "Running", all_ready).await;
    let before = container_id(&p, "app");
    let nodes: Api<Node> = Api::all(client.clone());

    // Docker goes away (and, as a daemon restart would, its containers stop).
    proxy.cut();
    docker(&["stop", "-t", "1", &before]);
    let not_ready = eventually(
        "the node NotReady once Docker is gone for longer than the threshold",
        Duration::from_secs(30),
        || async {
            let n = nodes.get("node-outage").await.ok()?;
            (node_ready(&n).as_deref() == Some("False")).then_some(n)
        },
    )
    .await;
    let message = not_ready
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message
        .unwrap_or_default();
    assert!(message.contains("Docker"), "{message}");

    // Docker comes back: the node is Ready again and the pod runs again.
    proxy.restore();
    eventually("the node Ready again", Duration::from_secs(30), || async {
        let n = nodes.get("node-outage").await.ok()?;
        (node_ready(&n).as_deref() == Some("True")).then_some(())
    })
    .await;
    wait_pod(&client, "survivor", MINUTE, "running again", |p| {
        all_ready(p) && container_id(p, "app") != before
    })
    .await;
}
