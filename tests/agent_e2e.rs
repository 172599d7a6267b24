//! End to end: the real `berth server` binary, the real `berth agent` binary and the real
//! Docker engine. Pods are created bound to the agent's node (what the scheduler's binding
//! does) and everything is observed as a user would: through the API, kubectl and docker.

pub mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use support::api::{Server, stdout};
use support::cluster::*;
use support::docker::{TEST_IMAGE, TestScope, runtime, sh};
use support::{accept, eventually};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_pod_with_a_helper_runs_with_env_status_events_and_a_ready_node() {
    runtime().await;
    let scope = TestScope::new("e2e-pod");
    let server = Server::start();
    let agent = Agent::start(&server, "node-pod", &scope, &[]);
    let client = admin(&server).await;

    // The node registered, is Ready, and renews its lease.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get("node-pod").await.expect("node registered");
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["kubernetes.io/hostname"], "node-pod");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    let status = node.status.expect("node status");
    let ready = status.conditions.unwrap_or_default();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{ready:?}"
    );
    assert!(status.capacity.unwrap()["pods"].0 == "110");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let first = leases
        .get("node-pod")
        .await
        .expect("lease")
        .spec
        .unwrap()
        .renew_time;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = leases
        .get("node-pod")
        .await
        .unwrap()
        .spec
        .unwrap()
        .renew_time;
    assert_ne!(first, later, "the lease is renewed");

    create::<ConfigMap>(
        &client,
        json!({"metadata": {"name": "web-config"},
        "data": {"greeting": "hello from a configmap"}}),
    )
    .await;
    create::<Secret>(
        &client,
        json!({"metadata": {"name": "web-secret"},
        "stringData": {"token": "s3cr3t-value"}}),
    )
    .await;

    // The seeds' example: an app serving a shared volume and a helper filling it and
    // talking to the app over localhost.
    let pod = create_pod(&client, &agent.node, json!({
        "metadata": {"name": "web"},
        "spec": {
            "volumes": [{"name": "shared", "emptyDir": {}}],
            "containers": [
                {"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": sh("httpd -f -p 8080 -h /www"),
                 "ports": [{"containerPort": 8080}],
                 "volumeMounts": [{"name": "shared", "mountPath": "/www"}],
                 "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "web-config", "key": "greeting"}}},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "token"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                 ]},
                {"name": "helper", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": sh("echo helper-wrote-this > /shared/index.html; echo helper started; \
                     while true; do wget -qO /shared/fetched http://localhost:8080/index.html; sleep 1; done"),
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
            ]
        }
    })).await;
    let uid = pod.metadata.uid.clone().unwrap();
    let running = wait_pod(&client, "web", MINUTE, "Running and ready", all_ready).await;
    let status = running.status.clone().unwrap();
    let pod_ip = status.pod_ip.clone().expect("podIP");
    assert_eq!(status.pod_ips.as_ref().unwrap()[0].ip, pod_ip);
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    let conditions = status.conditions.clone().unwrap();
    for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == kind && c.status == "True"),
            "{kind}: {conditions:?}"
        );
    }
    for c in status.container_statuses.as_ref().unwrap() {
        assert!(c.started == Some(true) && c.ready, "{c:?}");
        assert!(c.container_id.as_deref().unwrap().starts_with("docker://"));
        assert!(c.image_id.starts_with("docker://sha256:"), "{c:?}");
        assert_eq!(c.restart_count, 0);
        assert!(c.state.as_ref().unwrap().running.is_some());
    }

    // The helper fetched what it wrote through the app, over localhost.
    let helper = container_id(&running, "helper");
    let fetched = eventually_output(
        || exec(&helper, "cat /shared/fetched 2>/dev/null || true"),
        "helper-wrote-this",
    )
    .await;
    assert_eq!(fetched, "helper-wrote-this");

    // Environment from a ConfigMap, a Secret and the downward API.
    let app = container_id(&running, "app");
    let env = exec(&app, "env");
    for want in [
        "GREETING=hello from a configmap",
        "TOKEN=s3cr3t-value",
        "POD_NAME=web",
        &format!("POD_IP={pod_ip}"),
        "NODE=node-pod",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing from {env}");
    }

    // Every container carries its labels; kubectl sees the pod Running; events were recorded.
    let labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", &app]);
    for key in [
        "berth.dev/pod-uid",
        "berth.dev/pod-namespace",
        "berth.dev/pod-name",
        "berth.dev/container",
        "berth.dev/node",
        "berth.dev/spec-hash",
    ] {
        assert!(labels.contains(key), "{key} missing from {labels}");
    }
    assert!(labels.contains(&uid));
    let out = server.kubectl(&["get", "pods", "web", "--no-headers"]);
    assert!(stdout(&out).contains("Running"), "{out:?}");
    assert!(stdout(&out).contains("2/2"), "{out:?}");
    wait_event(&client, "web", "Started", "Started container helper").await;
    let reasons: Vec<String> = pod_events(&client, "web")
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    for want in ["Pulled", "Created", "Started"] {
        assert!(
            reasons.iter().any(|r| r == want),
            "{want} missing from {reasons:?}"
        );
    }
    let out = server.kubectl(&["get", "events"]);
    assert!(stdout(&out).contains("Started container app"), "{out:?}");
    // No Secret value ever appears in events.
    assert!(!stdout(&out).contains("s3cr3t-value"));

    // kubectl logs and exec reach the containers through the agent's endpoint.
    let out = server.kubectl(&["logs", "web", "-c", "helper"]);
    assert_eq!(stdout(&out).trim(), "helper started", "{out:?}");
    let out = server.kubectl(&["exec", "web", "-c", "app", "--", "cat", "/www/index.html"]);
    assert_eq!(stdout(&out).trim(), "helper-wrote-this", "{out:?}");
    let out = server.kubectl(&["exec", "web", "-c", "app", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}

fn terminated_exit(p: &Pod, container: &str) -> Option<(i32, i32)> {
    let c = p
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?;
    let last = c.last_state.as_ref()?.terminated.as_ref()?;
    Some((last.exit_code, c.restart_count))
}

fn waiting_reason(p: &Pod, container: &str) -> Option<String> {
    let c = p
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?;
    c.state.as_ref()?.waiting.as_ref()?.reason.clone()
}

#[tokio::test]
async fn crashing_containers_restart_with_back_off_by_policy() {
    runtime().await;
    let scope = TestScope::new("e2e-crash");
    let server = Server::start();
    let agent = Agent::start(&server, "node-crash", &scope, &[]);
    let client = admin(&server).await;
    let crasher = |name: &str, policy: &str, code: i32| {
        json!({
            "metadata": {"name": name},
            "spec": {"restartPolicy": policy, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                                     "command": sh(&format!("echo run; exit {code}"))}]}
        })
    };
    let looping = create_pod(&client, &agent.node, crasher("loop", "Always", 3)).await;
    create_pod(&client, &agent.node, crasher("once-ok", "Never", 0)).await;
    create_pod(&client, &agent.node, crasher("once-bad", "Never", 1)).await;
    create_pod(&client, &agent.node, crasher("retry", "OnFailure", 0)).await;

    wait_pod(&client, "loop", MINUTE, "CrashLoopBackOff", |p| {
        waiting_reason(p, "app").as_deref() == Some("CrashLoopBackOff")
    })
    .await;
    let p = wait_pod(&client, "loop", MINUTE, "two restarts", |p| {
        terminated_exit(p, "app").is_some_and(|(code, n)| code == 3 && n >= 2)
    })
    .await;
    assert_eq!(
        phase(&p),
        "Running",
        "an Always pod keeps running between crashes"
    );
    wait_event(
        &client,
        "loop",
        "BackOff",
        "Back-off restarting failed container app",
    )
    .await;
    // The previous container is kept for `logs --previous`, older ones are not.
    let uid = looping.metadata.uid.unwrap();
    let kept = pod_container_ids(&uid, Some("app"));
    assert!((1..=2).contains(&kept.len()), "kept {kept:?}");
    wait_pod(&client, "loop", MINUTE, "a kept previous container", |_| {
        pod_container_ids(&uid, Some("app")).len() == 2
    })
    .await;

    // A missing image under imagePullPolicy Never waits with ErrImageNeverPull.
    create_pod(
        &client,
        &agent.node,
        json!({"metadata": {"name": "no-image"},
               "spec": {"containers": [{"name": "app", "image": "berth-test/absent:1",
                                        "imagePullPolicy": "Never"}]}}),
    )
    .await;
    let p = wait_pod(&client, "no-image", MINUTE, "ErrImageNeverPull", |p| {
        waiting_reason(p, "app").as_deref() == Some("ErrImageNeverPull")
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    wait_event(&client, "no-image", "Failed", "imagePullPolicy is Never").await;

    // An image from a registry that cannot be reached: ErrImagePull, then ImagePullBackOff
    // with its BackOff event while the agent waits to pull again.
    let unreachable = "127.0.0.1:1/berth-test/absent:1";
    create_pod(
        &client,
        &agent.node,
        json!({"metadata": {"name": "no-registry"},
               "spec": {"containers": [{"name": "app", "image": unreachable}]}}),
    )
    .await;
    wait_pod(&client, "no-registry", MINUTE, "ErrImagePull", |p| {
        waiting_reason(p, "app").as_deref() == Some("ErrImagePull")
    })
    .await;
    let p = wait_pod(&client, "no-registry", MINUTE, "ImagePullBackOff", |p| {
        waiting_reason(p, "app").as_deref() == Some("ImagePullBackOff")
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    wait_event(&client, "no-registry", "BackOff", "Back-off pulling image").await;
    wait_event(&client, "no-registry", "Failed", "127.0.0.1:1").await;

    // A command that is not in the image: the engine makes the container but cannot start
    // it. RunContainerError with the engine's reason, and the half-made container goes.
    create_pod(
        &client,
        &agent.node,
        json!({"metadata": {"name": "no-command"},
               "spec": {"containers": [{"name": "app", "image": TEST_IMAGE,
                                        "imagePullPolicy": "Never", "command": ["/no/such/tool"]}]}}),
    )
    .await;
    let p = wait_pod(&client, "no-command", MINUTE, "RunContainerError", |p| {
        waiting_reason(p, "app").as_deref() == Some("RunContainerError")
    })
    .await;
    let cs = &p
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    let message = cs
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone();
    assert!(
        message.as_deref().unwrap_or("").contains("/no/such/tool"),
        "the engine's reason: {message:?}"
    );
    wait_event(&client, "no-command", "Failed", "/no/such/tool").await;
    // Between tries nothing is left (a try lives for milliseconds; a kept container would
    // be in every sample).
    let uid = p.metadata.uid.clone().unwrap();
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.push(pod_container_ids(&uid, Some("app")));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        samples.iter().any(Vec::is_empty),
        "a container that did not start is kept: {samples:?}"
    );

    wait_pod(&client, "once-ok", MINUTE, "Succeeded", |p| {
        phase(p) == "Succeeded"
    })
    .await;
    wait_pod(&client, "retry", MINUTE, "Succeeded", |p| {
        phase(p) == "Succeeded"
    })
    .await;
    let bad = wait_pod(&client, "once-bad", MINUTE, "Failed", |p| {
        phase(p) == "Failed"
    })
    .await;
    let cs = &bad.status.unwrap().container_statuses.unwrap()[0];
    let term = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (1, Some("Error")));
    assert_eq!(cs.restart_count, 0);
}

#[tokio::test]
async fn deleting_a_pod_stops_it_gracefully_before_it_goes() {
    runtime().await;
    let scope = TestScope::new("e2e-delete");
    let server = Server::start();
    let agent = Agent::start(&server, "node-delete", &scope, &[]);
    let client = admin(&server).await;
    let pod = create_pod(&client, &agent.node, json!({
        "metadata": {"name": "polite"},
        "spec": {"terminationGracePeriodSeconds": 30,
                 "volumes": [{"name": "scratch", "emptyDir": {}}],
                 "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                                 "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                                 // Three seconds from SIGTERM to exit: the pod is seen Terminating.
                                 "command": sh("trap 'echo got TERM; sleep 3; exit 0' TERM; while true; do sleep 1; done")}]}
    })).await;
    let uid = pod.metadata.uid.unwrap();
    wait_pod(&client, "polite", MINUTE, "Running", all_ready).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let began = std::time::Instant::now();
    let deleted = pods
        .delete("polite", &DeleteParams::default())
        .await
        .expect("delete");
    let marked = deleted
        .left()
        .expect("a bound pod is marked, not removed at once");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    let kubectl = server.kubectl(&["get", "pod", "polite", "--no-headers"]);
    assert!(
        kubectl.status.success() && stdout(&kubectl).contains("Terminating"),
        "kubectl shows the pod Terminating: {kubectl:?}"
    );

    eventually(
        "the agent letting the pod object go after stopping it",
        Duration::from_secs(25),
        || {
            let pods = pods.clone();
            async move { matches!(pods.get_opt("polite").await, Ok(None)) }
        },
    )
    .await;
    // SIGTERM ended it: well within the 30 s grace period, so no SIGKILL was needed.
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "took {:?}",
        began.elapsed()
    );
    assert!(
        pod_container_ids(&uid, None).is_empty(),
        "containers removed"
    );
    let volumes = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=berth.dev/pod-uid={uid}"),
    ]);
    assert!(volumes.is_empty(), "pod volumes removed: {volumes}");
    wait_event(&client, "polite", "Killing", "Stopping container app").await;

    // A pod no node runs goes at once.
    let unbound: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "unbound"},
        // Another scheduler's pod: berth's scheduler leaves it unbound.
        "spec": {"schedulerName": "elsewhere",
                 "containers": [{"name": "app", "image": TEST_IMAGE}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &unbound).await.unwrap();
    let deleted = pods
        .delete("unbound", &DeleteParams::default())
        .await
        .unwrap();
    assert!(deleted.is_right(), "an unbound pod is removed at once");
}

#[tokio::test]
async fn config_map_and_secret_volumes_hold_files_that_update_in_place() {
    runtime().await;
    let scope = TestScope::new("e2e-volumes");
    let server = Server::start();
    let agent = Agent::start(&server, "node-volumes", &scope, &[]);
    let client = admin(&server).await;
    create::<ConfigMap>(
        &client,
        json!({"metadata": {"name": "files"},
        "data": {"app.conf": "level=1", "other": "x"}}),
    )
    .await;
    create::<Secret>(
        &client,
        json!({"metadata": {"name": "creds"},
        "stringData": {"password": "pa55word"}}),
    )
    .await;
    create_pod(
        &client,
        &agent.node,
        json!({
            "metadata": {"name": "reader"},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "volumes": [
                        {"name": "conf", "configMap": {"name": "files"}},
                        {"name": "secret", "secret": {"secretName": "creds", "defaultMode": 0o400,
                            "items": [{"key": "password", "path": "db/password"}]}}],
                     "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["sleep", "3600"],
                                     "volumeMounts": [
                                        {"name": "conf", "mountPath": "/etc/app"},
                                        {"name": "secret", "mountPath": "/etc/secret"}]}]}
        }),
    )
    .await;
    let p = wait_pod(&client, "reader", MINUTE, "Running", all_ready).await;
    let app = container_id(&p, "app");
    assert_eq!(exec(&app, "cat /etc/app/app.conf"), "level=1");
    assert_eq!(exec(&app, "cat /etc/app/other"), "x");
    assert_eq!(exec(&app, "cat /etc/secret/db/password"), "pa55word");
    assert_eq!(exec(&app, "stat -c %a /etc/secret/db/password"), "400");
    // Secret files live on tmpfs, never on disk; the mounts are read-only.
    let mounts = exec(&app, "cat /proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" /etc/secret ") && l.starts_with("tmpfs")),
        "{mounts}"
    );
    assert!(exec(&app, "touch /etc/app/new 2>&1 || echo refused").contains("refused"));

    // As the kubelet lays them out: each key links through `..data` to one generation folder.
    assert_eq!(exec(&app, "readlink /etc/app/app.conf"), "..data/app.conf");
    let generation = exec(&app, "readlink /etc/app/..data");
    assert!(generation.starts_with("..20"), "{generation}");

    // An update to the ConfigMap appears in the running container, which is not restarted:
    // a new generation swapped in with one rename, the old one and removed keys gone.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let patch = json!({"data": {"app.conf": "level=2", "other": null}});
    cms.patch(
        "files",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let updated = eventually_output(|| exec(&app, "cat /etc/app/app.conf"), "level=2").await;
    assert_eq!(updated, "level=2");
    let next = exec(&app, "readlink /etc/app/..data");
    assert_ne!(next, generation);
    let listing = exec(&app, "ls -a /etc/app | sort | tr '\\n' ' '");
    assert_eq!(listing.trim(), format!(". .. {next} ..data app.conf"));
    let p = wait_pod(&client, "reader", MINUTE, "Running", all_ready).await;
    assert_eq!(container_id(&p, "app"), app, "the container kept running");
}

#[tokio::test]
async fn a_server_listening_a_second_after_start_is_ready_long_before_its_probe_period() {
    runtime().await;
    let scope = TestScope::new("e2e-first-probe");
    let server = Server::start();
    let agent = Agent::start(&server, "node-first-probe", &scope, &[]);
    let client = admin(&server).await;
    // The first probe runs as the container starts, a second before httpd listens: the pod
    // must not wait the 30 s period for the next one.
    create_pod(&client, &agent.node, json!({
        "metadata": {"name": "late-listener"},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "web", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                     "command": sh("mkdir -p /www && touch /www/ready && sleep 1 && httpd -f -p 8080 -h /www"),
                     "ports": [{"name": "http", "containerPort": 8080}],
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                                        "periodSeconds": 30}}]}
    })).await;
    wait_pod(
        &client,
        "late-listener",
        Duration::from_secs(15),
        "ready",
        all_ready,
    )
    .await;
    // The agent posts events in order from one queue: once the Killing of the delete below is
    // there, any Unhealthy of the first probe, recorded before it, is there too.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.delete("late-listener", &DeleteParams::default())
        .await
        .expect("delete the pod");
    wait_event(
        &client,
        "late-listener",
        "Killing",
        "Stopping container web",
    )
    .await;
    let unhealthy: Vec<_> = pod_events(&client, "late-listener")
        .await
        .into_iter()
        .filter(|(reason, _)| reason == "Unhealthy")
        .collect();
    assert!(
        unhealthy.is_empty(),
        "failures before the server first answered are not reported: {unhealthy:?}"
    );
}

#[tokio::test]
async fn readiness_and_liveness_probes_decide_ready_and_restarts() {
    runtime().await;
    let scope = TestScope::new("e2e-probes");
    let server = Server::start();
    let agent = Agent::start(&server, "node-probes", &scope, &[]);
    let client = admin(&server).await;
    create_pod(&client, &agent.node, json!({
        "metadata": {"name": "probed"},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "web", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                     "command": sh("mkdir -p /www && touch /tmp/alive && httpd -f -p 8080 -h /www"),
                     "ports": [{"name": "http", "containerPort": 8080}],
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                                        "periodSeconds": 1, "failureThreshold": 1},
                     "livenessProbe": {"exec": {"command": ["cat", "/tmp/alive"]},
                                       "periodSeconds": 1, "failureThreshold": 2}}]}
    })).await;
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs[0].ready)
    };
    let running = wait_pod(&client, "probed", MINUTE, "running, not ready", |p| {
        phase(p) == "Running" && !ready(p)
    })
    .await;
    wait_event(&client, "probed", "Unhealthy", "Readiness probe failed").await;
    // The probe fails every second with the same message: one Event whose count grows, as
    // Kubernetes aggregates them, not an Event per failure.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let failures = || async {
        events
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some("probed")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("Readiness probe failed"))
            })
            .collect::<Vec<Event>>()
    };
    eventually("an Event's count to reach 3", MINUTE, || async {
        let found = failures().await;
        // (The first failures may say "connection refused" before httpd listens: another
        // message, another Event.)
        let mut messages: Vec<&str> = found.iter().filter_map(|e| e.message.as_deref()).collect();
        messages.sort_unstable();
        messages.dedup();
        assert_eq!(
            messages.len(),
            found.len(),
            "one Event per message: {found:?}"
        );
        accept(found, |found| {
            found.iter().any(|e| e.count.unwrap_or(0) >= 3)
        })
    })
    .await;
    let web = container_id(&running, "web");
    exec(&web, "echo ok > /www/ready");
    wait_pod(&client, "probed", MINUTE, "ready", ready).await;

    // A startup probe holds `started` and `ready` back until it passes.
    create_pod(
        &client,
        &agent.node,
        json!({
            "metadata": {"name": "slow-start"},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                         "command": ["sleep", "3600"],
                         "startupProbe": {"exec": {"command": ["cat", "/tmp/started"]},
                                          "periodSeconds": 1, "failureThreshold": 60}}]}
        }),
    )
    .await;
    let started = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs[0].started == Some(true))
    };
    let slow = wait_pod(&client, "slow-start", MINUTE, "running, not started", |p| {
        phase(p) == "Running" && !started(p) && !ready(p)
    })
    .await;
    exec(&container_id(&slow, "app"), "touch /tmp/started");
    wait_pod(&client, "slow-start", MINUTE, "started and ready", |p| {
        started(p) && ready(p)
    })
    .await;

    // The liveness probe fails: the container is restarted.
    exec(&web, "rm /tmp/alive");
    wait_event(&client, "probed", "Killing", "failed liveness probe").await;
    wait_pod(&client, "probed", MINUTE, "restarted", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs[0].restart_count >= 1)
    })
    .await;
}

/// Whether `ip` lies in `cidr` (`a.b.c.d/n`).
fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, prefix) = cidr.split_once('/').expect("a CIDR");
    let mask = u32::MAX << (32 - prefix.parse::<u32>().expect("a prefix length"));
    let num = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().expect("an IPv4 address"));
    num(ip) & mask == num(net) & mask
}

#[tokio::test]
async fn plugged_in_and_host_port_pods_share_the_nodes_addresses_and_reach_each_other() {
    runtime().await;
    let scope = TestScope::new("e2e-net");
    let server = Server::start();
    let agent = Agent::start(&server, "node-net", &scope, &[]);
    let client = admin(&server).await;
    let host_port = support::docker::free_port();
    let web = |text: &str, ports: serde_json::Value| {
        json!({"terminationGracePeriodSeconds": 1,
            "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["self.alias"]}],
            "containers": [{
            "name": "web", "image": TEST_IMAGE, "imagePullPolicy": "Never",
            "command": sh(&format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www")),
            "ports": ports}]})
    };
    // The agent plugs this one in itself; Docker attaches the other to publish its host port.
    create_pod(
        &client,
        &agent.node,
        json!({"metadata": {"name": "plugged"}, "spec": web("from-plugged", json!([{"containerPort": 8080}]))}),
    )
    .await;
    create_pod(
        &client,
        &agent.node,
        json!({"metadata": {"name": "published"},
               "spec": web("from-published", json!([{"containerPort": 8080, "hostPort": host_port}]))}),
    )
    .await;
    let plugged = wait_pod(&client, "plugged", MINUTE, "Running", all_ready).await;
    let published = wait_pod(&client, "published", MINUTE, "Running", all_ready).await;
    let ip = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("status.podIP")
    };
    let (plugged_ip, published_ip) = (ip(&plugged), ip(&published));
    assert_ne!(plugged_ip, published_ip);
    let nodes: Api<Node> = Api::all(client.clone());
    let cidr = nodes
        .get("node-net")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.pod_cidr)
        .expect("the node's podCIDR");
    for address in [&plugged_ip, &published_ip] {
        assert!(in_cidr(address, &cidr), "{address} not in {cidr}");
    }
    // Docker holds the host-port pod's sandbox at the address the agent gave it.
    let uid = published.metadata.uid.clone().unwrap();
    let sandbox = running_sandbox(&uid);
    let on_network = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &sandbox,
    ]);
    assert_eq!(on_network, published_ip);

    // Each pod reaches the other over the pod network, and the host port answers.
    // (busybox's nc: its wget crashes in the static test image.)
    let fetch = |from: &Pod, address: &str| {
        docker(&[
            "exec",
            &container_id(from, "web"),
            "sh",
            "-c",
            &format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {address} 8080"),
        ])
    };
    let answer = fetch(&plugged, &published_ip);
    assert!(answer.ends_with("from-published"), "{answer}");
    let answer = fetch(&published, &plugged_ip);
    assert!(answer.ends_with("from-plugged"), "{answer}");
    // Both resolve their hostAliases: the agent's hosts file and Docker's hold them.
    let answer = fetch(&plugged, "self.alias");
    assert!(answer.ends_with("from-plugged"), "{answer}");
    let answer = fetch(&published, "self.alias");
    assert!(answer.ends_with("from-published"), "{answer}");
    let what = format!("the host port {host_port} answering");
    eventually(&what, Duration::from_secs(10), || async {
        match http_get_local(host_port, "/index.html") {
            Ok(body) if body.contains("from-published") => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

#[tokio::test]
async fn a_host_network_pod_serves_on_the_nodes_address_with_the_nodes_name() {
    runtime().await;
    let scope = TestScope::new("e2e-hostnet");
    let server = Server::start();
    let agent = Agent::start(&server, "node-hostnet", &scope, &[]);
    let client = admin(&server).await;
    let port = support::docker::free_port();
    create_pod(
        &client,
        &agent.node,
        json!({"metadata": {"name": "exporter"}, "spec": {
            "hostNetwork": true, "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "command": sh(&format!("mkdir -p /www && hostname > /www/index.html && exec httpd -f -p {port} -h /www")),
                "ports": [{"containerPort": port, "hostPort": port}],
                "readinessProbe": {"httpGet": {"path": "/index.html", "port": port}, "periodSeconds": 1}}]}}),
    )
    .await;
    let pod = wait_pod(&client, "exporter", MINUTE, "Running", all_ready).await;
    let status = pod.status.clone().unwrap();
    assert_eq!(
        status.pod_ip, status.host_ip,
        "a hostNetwork pod has the node's address"
    );

    // It listens in the node's namespace, under the machine's hostname.
    let body = http_get_local(port, "/index.html").expect("the pod's port");
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        body.ends_with(&machine),
        "{body:?} should end with {machine:?}"
    );
    let uid = pod.metadata.uid.clone().unwrap();
    let sandbox = running_sandbox(&uid);
    let mode = |id: &str| docker(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", id]);
    assert_eq!(mode(&sandbox), "host");
    assert_eq!(
        mode(&container_id(&pod, "web")),
        format!(
            "container:{}",
            docker(&["inspect", "-f", "{{.Id}}", &sandbox])
        )
    );
}
